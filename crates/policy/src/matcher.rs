//! The compiled matcher: each entry kind in its cheapest exact structure.
//!
//! | entry kind | structure | cost of one query |
//! |---|---|---|
//! | exact name | hash map name → entries | one probe |
//! | exact IP | hash map address → entries | one probe |
//! | `*.suffix` | hash map suffix → entries | one probe per `.` in the name |
//! | CIDR | one hash map per prefix length present, per family | one probe per length present (≤ 33 / 129); for IPv4 with many lengths, only the lengths with a range in the query's /16 |
//! | Hub alias, or wildcard covering one | a list, consulted for Hub references only | its length (≤ entries naming Hub) |
//! | `*` | a list | its length |
//!
//! None of these grows with the number of entries, and a query allocates nothing.

use std::collections::HashMap;
use std::net::IpAddr;

use foldhash::fast::RandomState;

use crate::entry::{Entry, EntryHost, Rank, is_strictly_below};
use crate::host::{DOCKER_HUB_ALIASES, Host, Registry};

type Map<K> = HashMap<K, Vec<u32>, RandomState>;

/// Which list an entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum List {
    /// `--whitelist-registry`.
    Whitelist,
    /// `--insecure-registry`.
    Insecure,
}

/// The best match of a query, and whether any insecure entry matched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Found {
    pub(crate) best: Option<u32>,
    pub(crate) insecure: bool,
}

impl Found {
    fn merge(self, other: Found, ranks: &[Rank]) -> Found {
        Found {
            best: better(self.best, other.best, ranks),
            insecure: self.insecure || other.insecure,
        }
    }
}

/// The more specific of two matches; the earlier entry on a tie.
fn better(a: Option<u32>, b: Option<u32>, ranks: &[Rank]) -> Option<u32> {
    match (a, b) {
        (Some(a), Some(b)) => {
            let key = |id: u32| (ranks[id as usize], std::cmp::Reverse(id));
            Some(if key(b) > key(a) { b } else { a })
        }
        (a, None) => a,
        (None, b) => b,
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Matcher {
    entries: Vec<(Entry, List)>,
    ranks: Vec<Rank>,
    names: Map<Box<str>>,
    ips: Map<IpAddr>,
    wildcards: Map<Box<str>>,
    v4: Vec<(u8, Map<u32>)>,
    /// For each IPv4 /16, a bit per `v4` table that has a range overlapping it; built when there
    /// are enough tables that probing each one costs more than this lookup.
    v4_by_16: Option<Box<[u64]>>,
    v6: Vec<(u8, Map<u128>)>,
    hub: Vec<u32>,
    any: Vec<u32>,
}

impl Matcher {
    pub(crate) fn new(entries: Vec<(Entry, List)>) -> Self {
        let mut m = Matcher {
            ranks: entries.iter().map(|(e, _)| e.rank()).collect(),
            ..Matcher::default()
        };
        for (id, (entry, _)) in entries.iter().enumerate() {
            let id = id as u32;
            match entry.host() {
                EntryHost::Any => m.any.push(id),
                EntryHost::Exact(Host::Name(name)) => {
                    m.names.entry(name.clone()).or_default().push(id);
                    if DOCKER_HUB_ALIASES.contains(&&**name) {
                        m.hub.push(id);
                    }
                }
                EntryHost::Exact(Host::Ip(ip)) => m.ips.entry(*ip).or_default().push(id),
                EntryHost::Wildcard(suffix) => {
                    m.wildcards.entry(suffix.clone()).or_default().push(id);
                    if DOCKER_HUB_ALIASES
                        .iter()
                        .any(|alias| is_strictly_below(alias, suffix))
                    {
                        m.hub.push(id);
                    }
                }
                EntryHost::Cidr(ipnet::IpNet::V4(net)) => {
                    let len = net.prefix_len();
                    let key = u32::from(net.network());
                    table(&mut m.v4, len).entry(key).or_default().push(id);
                }
                EntryHost::Cidr(ipnet::IpNet::V6(net)) => {
                    let len = net.prefix_len();
                    let key = u128::from(net.network());
                    table(&mut m.v6, len).entry(key).or_default().push(id);
                }
            }
        }
        // Longest prefixes first, so the first hit per family is the most specific range.
        m.v4.sort_by_key(|t| std::cmp::Reverse(t.0));
        m.v6.sort_by_key(|t| std::cmp::Reverse(t.0));
        m.v4_by_16 = index_v4_by_16(&m.v4);
        m.entries = entries;
        m
    }

    pub(crate) fn entry(&self, id: u32) -> &(Entry, List) {
        &self.entries[id as usize]
    }

    pub(crate) fn has_wildcards(&self) -> bool {
        !self.wildcards.is_empty()
    }

    /// The most specific entry matching a registry (and path), not counting reverse DNS.
    pub(crate) fn find(&self, registry: &Registry, path: Option<&str>) -> Found {
        let mut found = Found::default();
        self.each_match(registry, path, |id| found = self.add(found, id));
        found
    }

    /// The most specific wildcard (or `*`) entry matching a name found by reverse lookup.
    pub(crate) fn find_by_name(
        &self,
        name: &str,
        registry: &Registry,
        path: Option<&str>,
    ) -> Found {
        let port = registry.effective_port();
        let mut found = Found::default();
        self.probe_wildcards(name, |ids| {
            for &id in ids {
                if self.entries[id as usize]
                    .0
                    .matches_port_and_path(port, path)
                {
                    found = self.add(found, id);
                }
            }
        });
        for &id in &self.any {
            if self.entries[id as usize]
                .0
                .matches_port_and_path(port, path)
            {
                found = self.add(found, id);
            }
        }
        found
    }

    /// Calls `f` with every entry id that matches, in no particular order.
    pub(crate) fn each_match(
        &self,
        registry: &Registry,
        path: Option<&str>,
        mut f: impl FnMut(u32),
    ) {
        let port = registry.effective_port();
        let mut consider = |ids: &[u32]| {
            for &id in ids {
                if self.entries[id as usize]
                    .0
                    .matches_port_and_path(port, path)
                {
                    f(id);
                }
            }
        };
        consider(&self.any);
        if registry.is_docker_hub() {
            // Every entry that can match Hub is in this list: aliases and wildcards covering one.
            consider(&self.hub);
            return;
        }
        match registry.host() {
            Host::Name(name) => {
                if let Some(ids) = self.names.get(&**name) {
                    consider(ids);
                }
                self.probe_wildcards(name, consider);
            }
            Host::Ip(ip) => {
                if let Some(ids) = self.ips.get(ip) {
                    consider(ids);
                }
                match ip {
                    IpAddr::V4(v4) => {
                        let bits = u32::from(*v4);
                        let mut probe = |(len, map): &(u8, Map<u32>)| {
                            let mask = u32::MAX.checked_shl(32 - u32::from(*len)).unwrap_or(0);
                            if let Some(ids) = map.get(&(bits & mask)) {
                                consider(ids);
                            }
                        };
                        match &self.v4_by_16 {
                            Some(index) => {
                                let mut tables = index[(bits >> 16) as usize];
                                while tables != 0 {
                                    probe(&self.v4[tables.trailing_zeros() as usize]);
                                    tables &= tables - 1;
                                }
                            }
                            None => self.v4.iter().for_each(probe),
                        }
                    }
                    IpAddr::V6(v6) => {
                        let bits = u128::from(*v6);
                        for (len, map) in &self.v6 {
                            let mask = u128::MAX.checked_shl(128 - u32::from(*len)).unwrap_or(0);
                            if let Some(ids) = map.get(&(bits & mask)) {
                                consider(ids);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Looks up every proper suffix of `name` that starts after a `.`.
    fn probe_wildcards(&self, name: &str, mut f: impl FnMut(&[u32])) {
        if self.wildcards.is_empty() {
            return;
        }
        // A dot at index 0 has no label before it: `.example.com` is not below `example.com`.
        for (i, _) in name.match_indices('.').filter(|&(i, _)| i > 0) {
            if let Some(ids) = self.wildcards.get(&name[i + 1..]) {
                f(ids);
            }
        }
    }

    fn add(&self, found: Found, id: u32) -> Found {
        Found {
            best: better(found.best, Some(id), &self.ranks),
            insecure: found.insecure || self.entries[id as usize].1 == List::Insecure,
        }
    }

    pub(crate) fn merge(&self, a: Found, b: Found) -> Found {
        a.merge(b, &self.ranks)
    }
}

/// Below this many IPv4 prefix lengths, probing every table is cheaper than the /16 index.
const V4_INDEX_MIN_TABLES: usize = 4;

/// Builds the /16 index of the IPv4 tables (at most 33, so a table is a bit of a `u64`).
fn index_v4_by_16(tables: &[(u8, Map<u32>)]) -> Option<Box<[u64]>> {
    if tables.len() < V4_INDEX_MIN_TABLES {
        return None;
    }
    let mut index = vec![0u64; 1 << 16].into_boxed_slice();
    for (bit, (len, map)) in tables.iter().enumerate() {
        for &network in map.keys() {
            // A range of /16 or longer lies in one /16; a shorter one spans 2^(16 - len) of them.
            let first = (network >> 16) as usize;
            let span = 1usize << 16u8.saturating_sub(*len);
            for slot in &mut index[first..first + span] {
                *slot |= 1 << bit;
            }
        }
    }
    Some(index)
}

fn table<K>(tables: &mut Vec<(u8, Map<K>)>, len: u8) -> &mut Map<K> {
    let at = match tables.iter().position(|(l, _)| *l == len) {
        Some(at) => at,
        None => {
            tables.push((len, Map::default()));
            tables.len() - 1
        }
    };
    &mut tables[at].1
}
