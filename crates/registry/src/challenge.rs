//! `WWW-Authenticate` (RFC 7235 §4.1) and `Link` (RFC 8288) header parsing.

/// One authentication challenge: a scheme and its parameters (names lower-cased).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// The scheme, lower-cased (`bearer`, `basic`).
    pub scheme: String,
    /// `name=value` parameters in order, names lower-cased, quoted values unescaped.
    pub params: Vec<(String, String)>,
    /// A token68 given instead of parameters.
    pub token68: Option<String>,
}

impl Challenge {
    /// The value of parameter `name` (case-insensitive).
    #[must_use]
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

fn is_token68_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-._~+/".contains(&c)
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn skip_ws_commas(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.i += 1;
        }
    }

    fn token(&mut self) -> Option<String> {
        let start = self.i;
        while self.peek().is_some_and(is_tchar) {
            self.i += 1;
        }
        (self.i > start).then(|| {
            String::from_utf8_lossy(self.s.get(start..self.i).unwrap_or_default()).into_owned()
        })
    }

    /// A quoted-string with backslash escapes; `None` when unterminated.
    fn quoted(&mut self) -> Option<String> {
        if self.peek() != Some(b'"') {
            return None;
        }
        self.i += 1;
        let mut out = Vec::new();
        loop {
            match self.peek()? {
                b'"' => {
                    self.i += 1;
                    return Some(String::from_utf8_lossy(&out).into_owned());
                }
                b'\\' => {
                    self.i += 1;
                    out.push(self.peek()?);
                    self.i += 1;
                }
                c => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
    }

    /// Whether `name =` (a parameter, not a new scheme) starts at the cursor.
    fn at_param(&self) -> bool {
        let mut j = self.i;
        while self.s.get(j).copied().is_some_and(is_tchar) {
            j += 1;
        }
        if j == self.i {
            return false;
        }
        while matches!(self.s.get(j), Some(b' ' | b'\t')) {
            j += 1;
        }
        if self.s.get(j) != Some(&b'=') {
            return false;
        }
        // `abc==` (token68 padding) or a bare `name=` at the end is not a parameter.
        j += 1;
        while matches!(self.s.get(j), Some(b' ' | b'\t')) {
            j += 1;
        }
        !matches!(self.s.get(j), None | Some(b'=' | b','))
    }
}

/// Parses every challenge of a `WWW-Authenticate` value (several may share one header,
/// comma separated). Malformed trailing input ends the list; what parsed before is kept.
///
/// ```
/// let c = vch_registry::parse_www_authenticate(
///     r#"Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull""#,
/// );
/// assert_eq!(c[0].scheme, "bearer");
/// assert_eq!(c[0].param("scope"), Some("repository:a/b:pull"));
/// ```
#[must_use]
pub fn parse_www_authenticate(value: &str) -> Vec<Challenge> {
    let mut cur = Cursor {
        s: value.as_bytes(),
        i: 0,
    };
    let mut out = Vec::new();
    loop {
        cur.skip_ws_commas();
        let Some(scheme) = cur.token() else { break };
        let mut ch = Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params: Vec::new(),
            token68: None,
        };
        cur.skip_ws();
        // token68 (`Basic dXNlcjpwYXNz`): token68 characters then optional `=` padding,
        // followed by the end or a comma.
        if !cur.at_param() && cur.peek().is_some_and(is_token68_char) {
            let start = cur.i;
            while cur.peek().is_some_and(is_token68_char) {
                cur.i += 1;
            }
            while cur.peek() == Some(b'=') {
                cur.i += 1;
            }
            let end = cur.i;
            cur.skip_ws();
            if matches!(cur.peek(), None | Some(b',')) {
                ch.token68 = Some(
                    String::from_utf8_lossy(value.as_bytes().get(start..end).unwrap_or_default())
                        .into_owned(),
                );
                out.push(ch);
                continue;
            }
            // Not a token68 after all: the word was the next challenge's scheme.
            cur.i = start;
            out.push(ch);
            continue;
        }
        loop {
            cur.skip_ws_commas();
            if !cur.at_param() {
                break;
            }
            let Some(name) = cur.token() else { break };
            cur.skip_ws();
            cur.i += 1; // the '=' at_param saw
            cur.skip_ws();
            let value = if cur.peek() == Some(b'"') {
                match cur.quoted() {
                    Some(v) => v,
                    None => {
                        out.push(ch);
                        return out;
                    }
                }
            } else {
                // RFC 7235 wants a token here, but servers send bare URLs (`realm=https://…`):
                // take everything up to the next comma or space.
                let start = cur.i;
                while cur
                    .peek()
                    .is_some_and(|c| !matches!(c, b',' | b' ' | b'\t'))
                {
                    cur.i += 1;
                }
                String::from_utf8_lossy(value.as_bytes().get(start..cur.i).unwrap_or_default())
                    .into_owned()
            };
            ch.params.push((name.to_ascii_lowercase(), value));
        }
        out.push(ch);
        if cur.peek().is_some() && !cur.peek().is_some_and(is_tchar) {
            // Garbage that is neither a parameter nor a scheme.
            break;
        }
    }
    out
}

/// The `rel="next"` target of a `Link` header (`<url>; rel="next"`), as the registry's
/// pagination sends it; `None` without one.
///
/// ```
/// let next = vch_registry::parse_link_next(r#"</v2/_catalog?last=b&n=2>; rel="next""#);
/// assert_eq!(next.as_deref(), Some("/v2/_catalog?last=b&n=2"));
/// ```
#[must_use]
pub fn parse_link_next(value: &str) -> Option<String> {
    let mut rest = value;
    loop {
        let open = rest.find('<')?;
        let after = rest.get(open + 1..)?;
        let close = after.find('>')?;
        let target = after.get(..close)?;
        let params_start = after.get(close + 1..)?;
        // Parameters run to the next link (a comma outside quotes) or the end.
        let mut end = params_start.len();
        let mut in_quotes = false;
        for (i, c) in params_start.char_indices() {
            match c {
                '"' => in_quotes = !in_quotes,
                ',' if !in_quotes => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        let params = params_start.get(..end)?;
        let is_next = params.split(';').any(|p| {
            let Some((name, val)) = p.split_once('=') else {
                return false;
            };
            name.trim().eq_ignore_ascii_case("rel")
                && val
                    .trim()
                    .trim_matches('"')
                    .split_ascii_whitespace()
                    .any(|r| r.eq_ignore_ascii_case("next"))
        });
        // A target with a `<` in it (`< <b>`) or an empty one is malformed, not a URL to
        // follow (fuzz finding, seed crash-3e0979b3…); later links may still be good.
        let target = target.trim();
        if is_next && !target.is_empty() && !target.contains('<') {
            return Some(target.to_owned());
        }
        rest = params_start.get(end..)?;
        if rest.is_empty() {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_bearer_challenge() {
        let c = parse_www_authenticate(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull,push""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c[0].param("service"), Some("registry.docker.io"));
        assert_eq!(
            c[0].param("scope"),
            Some("repository:library/alpine:pull,push")
        );
    }

    #[test]
    fn several_challenges_escapes_and_token68() {
        let c = parse_www_authenticate(
            r#"Basic realm="a \"quoted\" realm", charset=UTF-8, Bearer realm=https://t/x ,scope="s",Negotiate abc123==, Other"#,
        );
        assert_eq!(c.len(), 4, "{c:?}");
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].param("realm"), Some("a \"quoted\" realm"));
        assert_eq!(c[0].param("CHARSET"), Some("UTF-8"));
        assert_eq!(c[1].scheme, "bearer");
        assert_eq!(c[1].param("realm"), Some("https://t/x"));
        assert_eq!(c[1].param("scope"), Some("s"));
        assert_eq!(c[2].token68.as_deref(), Some("abc123=="));
        assert_eq!(c[3].scheme, "other");
    }

    #[test]
    fn unterminated_quote_keeps_what_parsed() {
        let c = parse_www_authenticate(r#"Bearer realm="x",service="unterminated"#);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].param("realm"), Some("x"));
        assert_eq!(c[0].param("service"), None);
        assert!(parse_www_authenticate("").is_empty());
        assert!(parse_www_authenticate(" , ,").is_empty());
    }

    #[test]
    fn link_next_among_several() {
        assert_eq!(
            parse_link_next(
                r#"<https://a/prev>; rel="prev", </v2/t/tags/list?n=1&last=a>; rel="next""#
            )
            .as_deref(),
            Some("/v2/t/tags/list?n=1&last=a")
        );
        assert_eq!(parse_link_next(r#"<x>; rel="prev first""#), None);
        assert_eq!(
            parse_link_next(r#"<x>; title="a,b"; rel=next"#).as_deref(),
            Some("x")
        );
        assert_eq!(parse_link_next("garbage"), None);
    }
}
