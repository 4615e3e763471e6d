//! The compiled matcher: each entry kind in its cheapest exact structure.
//!
//! | entry kind | structure | cost of one query |
//! |---|---|---|
//! | exact name | hash map name → entries | one probe |
//! | exact IP | hash map address → entries | one probe |
//! | `*.suffix` | hash map suffix → entries | one probe per `.` in the name |
//! | CIDR | per family, the address line cut into segments at range boundaries, each with the ranges covering it | one binary search over the boundaries |
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
    /// Bit `k` is set when some wildcard suffix has `k` labels (bit 63: 63 or more), so a query
    /// probes only the suffixes of its name that could be one.
    wildcard_labels: u64,
    v4: Ranges<u32>,
    v6: Ranges<u128>,
    hub: Vec<u32>,
    any: Vec<u32>,
}

impl Matcher {
    pub(crate) fn new(entries: Vec<(Entry, List)>) -> Self {
        let mut m = Matcher {
            ranks: entries.iter().map(|(e, _)| e.rank()).collect(),
            ..Matcher::default()
        };
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
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
                    m.wildcard_labels |= label_bit(labels(suffix));
                    if DOCKER_HUB_ALIASES
                        .iter()
                        .any(|alias| is_strictly_below(alias, suffix))
                    {
                        m.hub.push(id);
                    }
                }
                EntryHost::Cidr(ipnet::IpNet::V4(net)) => {
                    v4.push((u32::from(net.network()), u32::from(net.broadcast()), id));
                }
                EntryHost::Cidr(ipnet::IpNet::V6(net)) => {
                    v6.push((u128::from(net.network()), u128::from(net.broadcast()), id));
                }
            }
        }
        let add = |found, id| add(&entries, &m.ranks, found, id);
        m.v4 = Ranges::new(v4, add);
        m.v6 = Ranges::new(v6, add);
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
        let ranges = self.each_match_but_ranges(registry, path, |id| found = self.add(found, id));
        match ranges {
            Some(IpAddr::V4(ip)) => self.merge(found, self.v4.best(u32::from(ip))),
            Some(IpAddr::V6(ip)) => self.merge(found, self.v6.best(u128::from(ip))),
            None => found,
        }
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
        match self.each_match_but_ranges(registry, path, &mut f) {
            Some(IpAddr::V4(ip)) => self.v4.covering(u32::from(ip)).iter().copied().for_each(f),
            Some(IpAddr::V6(ip)) => self.v6.covering(u128::from(ip)).iter().copied().for_each(f),
            None => {}
        }
    }

    /// [`Matcher::each_match`] except CIDR ranges; returns the address to look up in the ranges,
    /// if any. (A range takes no port or path, so whatever the query's port and path, the ranges
    /// covering an address are all matches.)
    fn each_match_but_ranges(
        &self,
        registry: &Registry,
        path: Option<&str>,
        mut f: impl FnMut(u32),
    ) -> Option<IpAddr> {
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
            return None;
        }
        match registry.host() {
            Host::Name(name) => {
                if let Some(ids) = self.names.get(&**name) {
                    consider(ids);
                }
                self.probe_wildcards(name, consider);
                None
            }
            Host::Ip(ip) => {
                if let Some(ids) = self.ips.get(ip) {
                    consider(ids);
                }
                Some(*ip)
            }
        }
    }

    /// Looks up every proper suffix of `name` that starts after a `.` and has as many labels as
    /// some wildcard.
    fn probe_wildcards(&self, name: &str, mut f: impl FnMut(&[u32])) {
        if self.wildcards.is_empty() {
            return;
        }
        let mut remaining = labels(name);
        // A dot at index 0 has no label before it: `.example.com` is not below `example.com`.
        for (i, &b) in name.as_bytes().iter().enumerate() {
            if b != b'.' {
                continue;
            }
            remaining -= 1;
            if i > 0
                && self.wildcard_labels & label_bit(remaining) != 0
                && let Some(ids) = self.wildcards.get(&name[i + 1..])
            {
                f(ids);
            }
        }
    }

    fn add(&self, found: Found, id: u32) -> Found {
        add(&self.entries, &self.ranks, found, id)
    }

    pub(crate) fn merge(&self, a: Found, b: Found) -> Found {
        a.merge(b, &self.ranks)
    }
}

/// The number of labels of a name: its dots, plus one.
fn labels(name: &str) -> usize {
    1 + name.bytes().filter(|&b| b == b'.').count()
}

/// The bit of [`Matcher::wildcard_labels`] for a suffix of `labels` labels.
fn label_bit(labels: usize) -> u64 {
    1 << labels.min(63)
}

/// `found` with entry `id` added.
fn add(entries: &[(Entry, List)], ranks: &[Rank], found: Found, id: u32) -> Found {
    Found {
        best: better(found.best, Some(id), ranks),
        insecure: found.insecure || entries[id as usize].1 == List::Insecure,
    }
}

/// Address ranges (CIDRs) cut into elementary segments at their boundaries, each segment with the
/// ids of the ranges that cover it: a query is one binary search. CIDRs are nested or disjoint, so
/// a segment is covered by at most one range per prefix length.
#[derive(Debug, Clone)]
struct Ranges<A> {
    /// Where each segment starts, ascending; a segment ends where the next starts.
    starts: Vec<A>,
    /// `ids[offsets[k]..offsets[k + 1]]` are the ranges covering segment `k`.
    offsets: Vec<u32>,
    ids: Vec<u32>,
    /// The best of those ranges, and whether one is insecure: deciding reads this one value
    /// instead of each range's entry (scattered over a large entry table).
    found: Vec<Found>,
}

impl<A> Default for Ranges<A> {
    fn default() -> Self {
        Ranges {
            starts: Vec::new(),
            offsets: vec![0],
            ids: Vec::new(),
            found: Vec::new(),
        }
    }
}

/// An address as an integer: IPv4 as `u32`, IPv6 as `u128`.
trait Address: Copy + Ord {
    /// The next address, `None` after the last one.
    fn successor(self) -> Option<Self>;
}

impl Address for u32 {
    fn successor(self) -> Option<Self> {
        self.checked_add(1)
    }
}

impl Address for u128 {
    fn successor(self) -> Option<Self> {
        self.checked_add(1)
    }
}

impl<A: Address> Ranges<A> {
    /// Builds the segments from `(first, last, id)` ranges (inclusive), which must be CIDRs.
    fn new(mut ranges: Vec<(A, A, u32)>, add: impl Fn(Found, u32) -> Found) -> Self {
        // Outer ranges before the ranges nested in them that start at the same address.
        ranges.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
        let mut starts: Vec<A> = ranges
            .iter()
            .flat_map(|&(first, last, _)| std::iter::once(first).chain(last.successor()))
            .collect();
        starts.sort_unstable();
        starts.dedup();
        let mut out = Ranges {
            offsets: Vec::with_capacity(starts.len() + 1),
            ..Ranges::default()
        };
        // The ranges covering the current segment, innermost last: nested ranges end no later
        // than the ranges around them, so the ones that ended are always on top.
        let mut open: Vec<(A, u32)> = Vec::new();
        let mut next = 0;
        for &start in &starts {
            while open.last().is_some_and(|&(last, _)| last < start) {
                open.pop();
            }
            while let Some(&(_, last, id)) = ranges.get(next).filter(|r| r.0 == start) {
                open.push((last, id));
                next += 1;
            }
            out.offsets.push(out.ids.len() as u32);
            out.ids.extend(open.iter().map(|&(_, id)| id));
            out.found
                .push(open.iter().fold(Found::default(), |f, &(_, id)| add(f, id)));
        }
        out.offsets.push(out.ids.len() as u32);
        out.starts = starts;
        out
    }

    /// The segment that contains `address`, if any range starts at or before it.
    fn segment(&self, address: A) -> Option<usize> {
        self.starts
            .partition_point(|&s| s <= address)
            .checked_sub(1)
    }

    /// The ids of the ranges that contain `address`.
    fn covering(&self, address: A) -> &[u32] {
        match self.segment(address) {
            Some(k) => &self.ids[self.offsets[k] as usize..self.offsets[k + 1] as usize],
            None => &[],
        }
    }

    /// The best range containing `address`, and whether any such range is insecure.
    fn best(&self, address: A) -> Found {
        self.segment(address)
            .map_or_else(Found::default, |k| self.found[k])
    }
}
