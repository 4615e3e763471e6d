//! Doublestar name filters (repositories, tags) and the source → destination name mapping.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// Include and exclude globs over names; compiled once, matching cannot fail.
///
/// | include list | exclude list | a name matches when                               |
/// |--------------|--------------|---------------------------------------------------|
/// | empty        | empty        | always                                            |
/// | empty        | some         | no exclude glob matches                           |
/// | some         | any          | an include glob matches and no exclude glob does  |
///
/// Glob syntax (ripgrep's globset with `literal_separator`): `*` and `?` never cross `/`,
/// `**` does (`a/**` is everything below `a/`, `**/x` is `x` at any depth), `{a,b}` is
/// either, `[abc]` a class.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    include: Option<GlobSet>,
    exclude: GlobSet,
    include_patterns: Vec<String>,
}

impl Filter {
    /// Compiles the lists; the error is the offending pattern and globset's reason.
    pub(crate) fn new(
        include: &[String],
        exclude: &[String],
    ) -> std::result::Result<Self, (String, String)> {
        let build = |patterns: &[String]| -> std::result::Result<GlobSet, (String, String)> {
            let mut set = GlobSetBuilder::new();
            for p in patterns {
                if p.is_empty() {
                    return Err((p.clone(), "empty pattern".into()));
                }
                let glob = GlobBuilder::new(p)
                    .literal_separator(true)
                    .backslash_escape(true)
                    .build()
                    .map_err(|e| (p.clone(), e.kind().to_string()))?;
                set.add(glob);
            }
            set.build().map_err(|e| (String::new(), e.to_string()))
        };
        Ok(Self {
            include: if include.is_empty() {
                None
            } else {
                Some(build(include)?)
            },
            exclude: build(exclude)?,
            include_patterns: include.to_vec(),
        })
    }

    /// Whether `name` passes the filter (see the table above).
    #[must_use]
    pub fn matches(&self, name: &str) -> bool {
        self.include.as_ref().is_none_or(|set| set.is_match(name)) && !self.exclude.is_match(name)
    }

    /// The include patterns (empty: everything).
    pub(crate) fn include_patterns(&self) -> &[String] {
        &self.include_patterns
    }
}

/// Whether two include lists may match a common name, erring towards "yes": an empty list
/// (everything) overlaps anything; two patterns overlap when one matches the other as a
/// literal name, or when their literal prefixes (up to the first glob character) are
/// prefixes of one another.
pub(crate) fn may_overlap(a: &[String], b: &[String]) -> bool {
    if a.is_empty() || b.is_empty() {
        return true;
    }
    a.iter().any(|x| {
        b.iter()
            .any(|y| patterns_may_overlap(x.as_str(), y.as_str()))
    })
}

fn patterns_may_overlap(a: &str, b: &str) -> bool {
    let literal = |p: &str| p.find(['*', '?', '[', '{', '\\']).map_or(p.len(), |i| i);
    let (la, lb) = (literal(a), literal(b));
    let glob_match = |pattern: &str, name: &str| {
        GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .is_ok_and(|g| g.compile_matcher().is_match(name))
    };
    if la == a.len() && lb == b.len() {
        return a == b;
    }
    if la == a.len() {
        return glob_match(b, a);
    }
    if lb == b.len() {
        return glob_match(a, b);
    }
    let (pa, pb) = (&a[..la], &b[..lb]);
    pa.starts_with(pb) || pb.starts_with(pa)
}

/// The destination repository of `source`: `flatten` leading path components dropped (the
/// last component always stays), then `namespace/` prepended when set.
///
/// | source          | flatten | namespace | destination          |
/// |-----------------|---------|-----------|----------------------|
/// | `team-a/app`    | 0       | –         | `team-a/app`         |
/// | `team-a/app`    | 0       | `mirror`  | `mirror/team-a/app`  |
/// | `team-a/x/app`  | 1       | `mirror`  | `mirror/x/app`       |
/// | `team-a/x/app`  | 5       | `mirror`  | `mirror/app`         |
#[must_use]
pub fn destination_repository(source: &str, flatten: usize, namespace: Option<&str>) -> String {
    let parts: Vec<&str> = source.split('/').collect();
    let drop = flatten.min(parts.len().saturating_sub(1));
    let rest = parts[drop..].join("/");
    match namespace {
        Some(ns) if !ns.is_empty() => format!("{ns}/{rest}"),
        _ => rest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(include: &[&str], exclude: &[&str]) -> Filter {
        let v = |x: &[&str]| x.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        Filter::new(&v(include), &v(exclude)).unwrap()
    }

    #[test]
    fn doublestar_table() {
        /// (what, include, exclude, name, expected)
        type Row<'a> = (&'a str, &'a [&'a str], &'a [&'a str], &'a str, bool);
        let rows: &[Row<'_>] = &[
            ("empty is all", &[], &[], "a/b/c", true),
            (
                "star stays in a component",
                &["team-a/*"],
                &[],
                "team-a/app",
                true,
            ),
            (
                "star does not cross /",
                &["team-a/*"],
                &[],
                "team-a/x/app",
                false,
            ),
            (
                "doublestar crosses /",
                &["team-a/**"],
                &[],
                "team-a/x/app",
                true,
            ),
            (
                "doublestar needs the prefix",
                &["team-a/**"],
                &[],
                "team-b/app",
                false,
            ),
            ("leading doublestar", &["**/app"], &[], "a/b/app", true),
            (
                "leading doublestar, top level",
                &["**/app"],
                &[],
                "app",
                true,
            ),
            ("question mark", &["v?"], &[], "v1", true),
            ("question mark is one char", &["v?"], &[], "v10", false),
            ("alternatives", &["{a,b}/x"], &[], "b/x", true),
            ("alternatives miss", &["{a,b}/x"], &[], "c/x", false),
            ("exclude wins", &["*"], &["*-rc*"], "1.0-rc1", false),
            ("exclude only", &[], &["*-rc*"], "1.0", true),
            ("exact", &["latest"], &[], "latest", true),
        ];
        for (what, inc, exc, name, want) in rows {
            assert_eq!(f(inc, exc).matches(name), *want, "{what}: {name}");
        }
    }

    #[test]
    fn bad_glob_is_refused_with_its_pattern() {
        let err = Filter::new(&["a/{b".to_owned()], &[]).unwrap_err();
        assert_eq!(err.0, "a/{b");
        assert!(Filter::new(&[String::new()], &[]).is_err());
    }

    #[test]
    fn destination_table() {
        assert_eq!(destination_repository("team-a/app", 0, None), "team-a/app");
        assert_eq!(
            destination_repository("team-a/app", 0, Some("mirror")),
            "mirror/team-a/app"
        );
        assert_eq!(
            destination_repository("team-a/x/app", 1, Some("mirror")),
            "mirror/x/app"
        );
        assert_eq!(
            destination_repository("team-a/x/app", 5, Some("mirror")),
            "mirror/app"
        );
        assert_eq!(destination_repository("app", 1, None), "app");
    }

    #[test]
    fn overlap_is_conservative() {
        let v = |x: &[&str]| x.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(may_overlap(&v(&[]), &v(&["a/*"])));
        assert!(may_overlap(&v(&["team-a/**"]), &v(&["team-a/app"])));
        assert!(may_overlap(&v(&["team-*"]), &v(&["team-a/**"])));
        assert!(!may_overlap(&v(&["team-a/**"]), &v(&["team-b/**"])));
        assert!(!may_overlap(&v(&["a"]), &v(&["b"])));
        assert!(!may_overlap(&v(&["team-a/*"]), &v(&["team-a/x/y"])));
    }
}
