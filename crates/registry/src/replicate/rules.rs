//! The rules file (TOML): endpoints, rules, retry settings; validated as a whole at load.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::filter::{Filter, destination_repository, may_overlap};
use super::schedule::{Trigger, parse_duration};
use crate::error::{Error, Result};

/// Default `concurrency` of a rule (repositories replicated at once).
pub const DEFAULT_RULE_CONCURRENCY: usize = 4;
/// Default state file name, beside the rules file.
pub const DEFAULT_STATE_FILE: &str = "replication-state.json";

/// A registry named in the rules file.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Endpoint {
    /// Its name (rules refer to it).
    pub name: String,
    /// The URL as written.
    pub url: String,
    /// `host[:port]`, as image references and credentials name it.
    pub host: String,
    /// `http://`: plain HTTP only.
    pub plain_http: bool,
    /// Verify the registry's certificate (default true).
    pub verify_tls: bool,
}

/// One replication rule, compiled.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Rule {
    /// Its name.
    pub name: String,
    /// Source endpoint name.
    pub from: String,
    /// Destination endpoint name.
    pub to: String,
    /// Repository filter.
    pub repositories: Filter,
    /// Tag filter.
    pub tags: Filter,
    /// Prefix at the destination.
    pub dest_namespace: Option<String>,
    /// Leading source path components dropped.
    pub flatten: usize,
    /// When it runs.
    pub trigger: Trigger,
    /// Propagate tag and manifest deletions.
    pub deletions: bool,
    /// Disabled rules run only when named on `run`'s command line.
    pub enabled: bool,
    /// Repositories replicated at once.
    pub concurrency: usize,
}

impl Rule {
    /// The destination repository of a source repository.
    #[must_use]
    pub fn destination(&self, source: &str) -> String {
        destination_repository(source, self.flatten, self.dest_namespace.as_deref())
    }
}

/// Retry settings (`[retry]`): per job, backoff doubling from `initial` up to `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retry {
    /// First delay (default 5 s).
    pub initial: Duration,
    /// Longest delay (default 5 min).
    pub max: Duration,
    /// Attempts per job in `run`, the first included (default 5); `serve` retries without
    /// limit.
    pub attempts: u32,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(5),
            max: Duration::from_secs(300),
            attempts: 5,
        }
    }
}

impl Retry {
    /// The delay before attempt `failures + 1`, after `failures` failures (1 or more).
    #[must_use]
    pub fn delay(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(31));
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// A validated rules file.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Rules {
    /// The state file (absolute or relative to the working directory).
    pub state: PathBuf,
    /// Endpoints by name.
    pub endpoints: BTreeMap<String, Endpoint>,
    /// Rules in file order.
    pub rules: Vec<Rule>,
    /// Retry settings.
    pub retry: Retry,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    state: Option<PathBuf>,
    #[serde(default)]
    endpoint: Vec<toml::Table>,
    #[serde(default)]
    rule: Vec<toml::Table>,
    retry: Option<toml::Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    name: String,
    url: String,
    #[serde(default = "yes")]
    verify_tls: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    from: String,
    to: String,
    #[serde(default)]
    repositories: Vec<String>,
    #[serde(default)]
    exclude_repositories: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    exclude_tags: Vec<String>,
    dest_namespace: Option<String>,
    #[serde(default)]
    flatten: usize,
    #[serde(default = "manual")]
    trigger: String,
    #[serde(default)]
    deletions: bool,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default = "default_concurrency")]
    concurrency: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    initial: Option<String>,
    max: Option<String>,
    attempts: Option<u32>,
}

fn yes() -> bool {
    true
}
fn manual() -> String {
    "manual".into()
}
fn default_concurrency() -> usize {
    DEFAULT_RULE_CONCURRENCY
}

impl Rules {
    /// Reads and validates a rules file; a relative `state` path is taken from the rules
    /// file's directory.
    ///
    /// # Errors
    /// [`Error::Io`] when it cannot be read; [`Error::Rules`] naming the rule or endpoint and
    /// the field.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        Self::parse(&text, &path.display().to_string(), dir)
    }

    /// Validates rules from text; `file` names it in errors, `dir` anchors the state path.
    ///
    /// # Errors
    /// [`Error::Rules`].
    pub fn parse(text: &str, file: &str, dir: &Path) -> Result<Self> {
        let err = |item: &str, reason: String| Error::Rules {
            file: file.to_owned(),
            item: item.to_owned(),
            reason,
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| err("top level", one_line(&e)))?;
        let mut endpoints = BTreeMap::new();
        for (i, table) in raw.endpoint.into_iter().enumerate() {
            let item = item_name("endpoint", i, &table);
            let e: RawEndpoint = from_table(table).map_err(|why| err(&item, why))?;
            let item = format!("endpoint {:?}", e.name);
            if e.name.is_empty() {
                return Err(err(&item, "field name: empty".into()));
            }
            let (host, plain_http) =
                parse_url(&e.url).map_err(|r| err(&item, format!("field url: {r}")))?;
            if endpoints.contains_key(&e.name) {
                return Err(err(&item, "field name: the name is used twice".into()));
            }
            endpoints.insert(
                e.name.clone(),
                Endpoint {
                    name: e.name,
                    url: e.url,
                    host,
                    plain_http,
                    verify_tls: e.verify_tls,
                },
            );
        }
        let mut rules: Vec<Rule> = Vec::new();
        let mut names = HashSet::new();
        for (i, table) in raw.rule.into_iter().enumerate() {
            let item = item_name("rule", i, &table);
            let r: RawRule = from_table(table).map_err(|why| err(&item, why))?;
            let item = format!("rule {:?}", r.name);
            let field = |f: &str, reason: String| err(&item, format!("field {f}: {reason}"));
            if r.name.is_empty() {
                return Err(field("name", "empty".into()));
            }
            if !names.insert(r.name.clone()) {
                return Err(field("name", "the name is used twice".into()));
            }
            for (f, ep) in [("from", &r.from), ("to", &r.to)] {
                if !endpoints.contains_key(ep) {
                    return Err(field(f, format!("no endpoint is named {ep:?}")));
                }
            }
            if r.from == r.to && r.dest_namespace.is_none() && r.flatten == 0 {
                return Err(field(
                    "to",
                    "the rule would copy every repository onto itself; set dest_namespace or flatten"
                        .into(),
                ));
            }
            if r.concurrency == 0 {
                return Err(field("concurrency", "must be at least 1".into()));
            }
            let repositories = Filter::new(&r.repositories, &r.exclude_repositories)
                .map_err(|(p, why)| field("repositories", format!("glob {p:?}: {why}")))?;
            let tags = Filter::new(&r.tags, &r.exclude_tags)
                .map_err(|(p, why)| field("tags", format!("glob {p:?}: {why}")))?;
            let trigger = Trigger::parse(&r.trigger).map_err(|why| field("trigger", why))?;
            let dest_namespace = match r.dest_namespace.as_deref().map(|n| n.trim_matches('/')) {
                None | Some("") => None,
                Some(ns) => {
                    check_namespace(ns).map_err(|why| field("dest_namespace", why))?;
                    Some(ns.to_owned())
                }
            };
            let rule = Rule {
                name: r.name,
                from: r.from,
                to: r.to,
                repositories,
                tags,
                dest_namespace,
                flatten: r.flatten,
                trigger,
                deletions: r.deletions,
                enabled: r.enabled,
                concurrency: r.concurrency,
            };
            if let Some(other) = rules.iter().find(|o| conflicts(o, &rule)) {
                return Err(field(
                    "repositories",
                    format!(
                        "rule {:?} may write the same destination repositories (same `to`, \
                         dest_namespace and flatten, overlapping repository patterns)",
                        other.name
                    ),
                ));
            }
            rules.push(rule);
        }
        let retry = match raw.retry {
            None => Retry::default(),
            Some(table) => {
                let r: RawRetry = from_table(table).map_err(|why| err("[retry]", why))?;
                let d = Retry::default();
                let dur = |f: &str, v: Option<String>, default: Duration| match v {
                    None => Ok(default),
                    Some(v) => parse_duration(&v)
                        .map_err(|why| err("[retry]", format!("field {f}: {why}"))),
                };
                let retry = Retry {
                    initial: dur("initial", r.initial, d.initial)?,
                    max: dur("max", r.max, d.max)?,
                    attempts: r.attempts.unwrap_or(d.attempts),
                };
                if retry.attempts == 0 {
                    return Err(err("[retry]", "field attempts: must be at least 1".into()));
                }
                if retry.initial.is_zero() || retry.max < retry.initial {
                    return Err(err(
                        "[retry]",
                        "field max: must be at least initial, and initial above 0".into(),
                    ));
                }
                retry
            }
        };
        Ok(Self {
            state: dir.join(raw.state.unwrap_or_else(|| DEFAULT_STATE_FILE.into())),
            endpoints,
            rules,
            retry,
        })
    }

    /// A rule by name.
    #[must_use]
    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }
}

/// `rule "name"` when the table has a string `name`, else `rule #N`.
fn item_name(kind: &str, i: usize, table: &toml::Table) -> String {
    match table.get("name").and_then(toml::Value::as_str) {
        Some(n) => format!("{kind} {n:?}"),
        None => format!("{kind} #{}", i + 1),
    }
}

/// Deserialises one table; a type error names its field (found from the error's span in
/// the table written out again, one key per line).
fn from_table<T: serde::de::DeserializeOwned>(
    table: toml::Table,
) -> std::result::Result<T, String> {
    let text = toml::to_string(&table).map_err(|e| e.to_string())?;
    toml::from_str(&text).map_err(|e| {
        let key = e.span().and_then(|span| {
            let line_start = text[..span.start.min(text.len())]
                .rfind('\n')
                .map_or(0, |i| i + 1);
            let (key, _) = text[line_start..].split_once('=')?;
            Some(key.trim().trim_matches('"').to_owned())
        });
        match key {
            Some(k) if !k.is_empty() && !k.contains(char::is_whitespace) => {
                format!("field {k}: {}", one_line(&e))
            }
            _ => one_line(&e),
        }
    })
}

fn one_line(e: &toml::de::Error) -> String {
    e.message().trim().replace('\n', " ")
}

/// Two rules conflict when they may write a common destination repository.
fn conflicts(a: &Rule, b: &Rule) -> bool {
    a.to == b.to
        && a.dest_namespace == b.dest_namespace
        && a.flatten == b.flatten
        && may_overlap(
            a.repositories.include_patterns(),
            b.repositories.include_patterns(),
        )
}

/// `http://host[:port]` or `https://host[:port]` (a trailing `/` allowed): `host[:port]` and
/// whether it is plain HTTP.
fn parse_url(url: &str) -> std::result::Result<(String, bool), String> {
    let (rest, plain) = if let Some(r) = url.strip_prefix("https://") {
        (r, false)
    } else if let Some(r) = url.strip_prefix("http://") {
        (r, true)
    } else {
        return Err(format!("{url:?}: must start with https:// or http://"));
    };
    let host = rest.strip_suffix('/').unwrap_or(rest);
    if host.is_empty() {
        return Err(format!("{url:?}: no host"));
    }
    if host.contains(['/', '?', '#', '@', ' ']) {
        return Err(format!(
            "{url:?}: only scheme, host and port (no path, query or user)"
        ));
    }
    if let Some((h, port)) = host.rsplit_once(':')
        && !h.ends_with(']')
        && (h.is_empty() || port.parse::<u16>().is_err())
    {
        return Err(format!("{url:?}: bad port {port:?}"));
    }
    Ok((host.to_owned(), plain))
}

/// Repository path components: lower-case letters, digits, and `.`, `_`, `-` inside.
fn check_namespace(ns: &str) -> std::result::Result<(), String> {
    for part in ns.split('/') {
        let ok = !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && part
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric())
            && part
                .bytes()
                .last()
                .is_some_and(|b| b.is_ascii_alphanumeric());
        if !ok {
            return Err(format!(
                "{ns:?}: each component lower-case letters and digits, with . _ - inside"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
state = "st.json"

[[endpoint]]
name = "dc1"
url = "https://reg1.example.com:5000"
verify_tls = true

[[endpoint]]
name = "dc2"
url = "http://127.0.0.1:5001/"

[[rule]]
name = "team-a-to-dc2"
from = "dc1"
to = "dc2"
repositories = ["team-a/**"]
exclude_repositories = []
tags = ["*"]
exclude_tags = ["*-rc*"]
dest_namespace = "mirror"
flatten = 0
trigger = "manual"
deletions = false
enabled = true
concurrency = 4

[retry]
initial = "1s"
max = "10s"
attempts = 3
"#;

    fn parse(text: &str) -> Result<Rules> {
        Rules::parse(text, "rules.toml", Path::new("/etc/regctl"))
    }

    #[test]
    fn the_issue_example_loads() {
        let r = parse(GOOD).unwrap();
        assert_eq!(r.state, Path::new("/etc/regctl/st.json"));
        assert_eq!(r.endpoints["dc1"].host, "reg1.example.com:5000");
        assert!(!r.endpoints["dc1"].plain_http);
        assert!(r.endpoints["dc2"].plain_http);
        let rule = r.rule("team-a-to-dc2").unwrap();
        assert_eq!(rule.destination("team-a/app"), "mirror/team-a/app");
        assert!(rule.repositories.matches("team-a/x/y"));
        assert!(!rule.tags.matches("1.0-rc1"));
        assert_eq!(r.retry.delay(1), Duration::from_secs(1));
        assert_eq!(r.retry.delay(3), Duration::from_secs(4));
        assert_eq!(r.retry.delay(30), Duration::from_secs(10));
    }

    #[test]
    fn defaults() {
        let r = parse(
            "[[endpoint]]\nname='a'\nurl='https://a'\n[[endpoint]]\nname='b'\nurl='https://b'\n\
             [[rule]]\nname='r'\nfrom='a'\nto='b'\n",
        )
        .unwrap();
        assert_eq!(r.state, Path::new("/etc/regctl/replication-state.json"));
        let rule = &r.rules[0];
        assert_eq!(rule.trigger, Trigger::Manual);
        assert!(rule.enabled && !rule.deletions);
        assert_eq!(rule.concurrency, DEFAULT_RULE_CONCURRENCY);
        assert!(rule.repositories.matches("any/thing"));
        assert_eq!(r.retry, Retry::default());
        assert_eq!(r.retry.delay(1), Duration::from_secs(5));
        assert_eq!(r.retry.delay(10), Duration::from_secs(300));
    }

    /// Each row: what, the text replaced in GOOD (from → to), and words the error must hold.
    #[test]
    fn errors_name_the_rule_or_endpoint_and_the_field() {
        let rows: &[(&str, &str, &str, &[&str])] = &[
            (
                "unknown rule field",
                "flatten = 0",
                "flaten = 0",
                &["rule \"team-a-to-dc2\"", "flaten"],
            ),
            (
                "unknown endpoint field",
                "verify_tls = true",
                "verify = true",
                &["endpoint \"dc1\"", "verify"],
            ),
            (
                "unknown top-level field",
                "state = ",
                "stat = ",
                &["top level", "stat"],
            ),
            (
                "unknown endpoint",
                "to = \"dc2\"",
                "to = \"dc3\"",
                &["rule \"team-a-to-dc2\"", "field to", "dc3"],
            ),
            (
                "bad url scheme",
                "https://reg1",
                "ftp://reg1",
                &["endpoint \"dc1\"", "field url"],
            ),
            (
                "url with a path",
                "5000\"",
                "5000/v2\"",
                &["endpoint \"dc1\"", "field url"],
            ),
            (
                "bad port",
                ":5000",
                ":50x0",
                &["endpoint \"dc1\"", "field url", "port"],
            ),
            (
                "duplicate endpoint",
                "name = \"dc2\"",
                "name = \"dc1\"",
                &["endpoint \"dc1\"", "twice"],
            ),
            (
                "bad glob",
                "[\"team-a/**\"]",
                "[\"team-a/{x\"]",
                &["rule \"team-a-to-dc2\"", "field repositories", "team-a/{x"],
            ),
            (
                "bad tag glob",
                "[\"*-rc*\"]",
                "[\"[\"]",
                &["rule \"team-a-to-dc2\"", "field tags"],
            ),
            (
                "bad trigger",
                "\"manual\"",
                "\"hourly\"",
                &["rule \"team-a-to-dc2\"", "field trigger", "hourly"],
            ),
            (
                "bad cron",
                "\"manual\"",
                "\"cron 61 * * * *\"",
                &["field trigger", "minute"],
            ),
            (
                "concurrency 0",
                "concurrency = 4",
                "concurrency = 0",
                &["rule \"team-a-to-dc2\"", "field concurrency"],
            ),
            (
                "bad namespace",
                "\"mirror\"",
                "\"Mirror\"",
                &["field dest_namespace"],
            ),
            (
                "wrong type",
                "flatten = 0",
                "flatten = \"x\"",
                &["rule \"team-a-to-dc2\"", "flatten"],
            ),
            (
                "retry attempts 0",
                "attempts = 3",
                "attempts = 0",
                &["[retry]", "attempts"],
            ),
            (
                "retry bad duration",
                "\"10s\"",
                "\"10 s\"",
                &["[retry]", "field max"],
            ),
            (
                "unknown retry field",
                "attempts = 3",
                "tries = 3",
                &["[retry]", "tries"],
            ),
        ];
        for (what, from, to, needles) in rows {
            assert!(GOOD.contains(from), "{what}: {from}");
            let text = GOOD.replacen(from, to, 1);
            let err = parse(&text).expect_err(what).to_string();
            assert!(err.starts_with("rules.toml: "), "{what}: {err}");
            for n in *needles {
                assert!(err.contains(n), "{what}: {err:?} lacks {n:?}");
            }
        }
    }

    #[test]
    fn duplicate_rules_and_conflicting_destinations_are_refused() {
        let second = |extra: &str| {
            format!("{GOOD}\n[[rule]]\nname = \"second\"\nfrom = \"dc1\"\nto = \"dc2\"\n{extra}\n")
        };
        let err = parse(&second(
            "repositories = [\"team-a/app\"]\ndest_namespace = \"mirror\"",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("rule \"second\"") && err.contains("team-a-to-dc2"),
            "{err}"
        );
        // Everything (empty list) overlaps.
        assert!(parse(&second("dest_namespace = \"mirror\"")).is_err());
        // Another namespace, or disjoint patterns: fine.
        parse(&second("dest_namespace = \"other\"")).unwrap();
        parse(&second(
            "repositories = [\"team-b/**\"]\ndest_namespace = \"mirror\"",
        ))
        .unwrap();
        let dup = GOOD.to_owned()
            + "\n[[rule]]\nname = \"team-a-to-dc2\"\nfrom = \"dc1\"\nto = \"dc2\"\n";
        let err = parse(&dup).unwrap_err().to_string();
        assert!(
            err.contains("rule \"team-a-to-dc2\"") && err.contains("twice"),
            "{err}"
        );
        // A rule onto itself without a namespace.
        let err = parse(
            &GOOD
                .replace("to = \"dc2\"", "to = \"dc1\"")
                .replace("dest_namespace = \"mirror\"\n", ""),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("field to"), "{err}");
    }
}
